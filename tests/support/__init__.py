"""Test support: a certificate factory (`pki`) and scripted loopback SMTP servers (`servers`)."""
