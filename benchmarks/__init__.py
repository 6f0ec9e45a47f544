"""Reproducible throughput, CPU-per-probe and scrape-cost measurements; see benchmarks/README.md."""
