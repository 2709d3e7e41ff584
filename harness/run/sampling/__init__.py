"""Samplers: the guest console, the query-migrate timeline, per-thread CPU."""
