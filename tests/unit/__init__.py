"""Unit tests: one serving module at a time, no server, no network beyond loopback."""
