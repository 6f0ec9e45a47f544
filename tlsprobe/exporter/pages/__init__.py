"""The HTML pages: the status page, the detail view of one endpoint and the senders section.

They render the published states (`tlsprobe.exporter.state`) and the drift history; the web
server (`tlsprobe.exporter.web`) serves them."""
