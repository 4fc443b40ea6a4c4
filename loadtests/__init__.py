"""Locust load tests of both servers: payloads, runs, sweeps, validity checks."""
