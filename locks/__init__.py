"""Distributed locks on the database and on Redis: leases, fencing tokens, force-release."""
