"""The simulated pilot bus backend: ports, contactors, meters and EVs in virtual time, and
the `sim:` section of a station file that configures it (``config``)."""
