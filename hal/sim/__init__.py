"""The simulated pilot bus backend: ports, contactors, meters and EVs in virtual time."""
