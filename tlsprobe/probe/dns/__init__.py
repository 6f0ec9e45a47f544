"""DNS and the policies published in it: MX/A expansion (`discover`), DNSSEC, TLSA lookup and DANE
matching (with its cache), MTA-STS policy parsing and its HTTPS fetch."""
