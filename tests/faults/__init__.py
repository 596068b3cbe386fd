"""Faults to survive: real worker processes, a real sweeper and real services, broken on purpose."""
