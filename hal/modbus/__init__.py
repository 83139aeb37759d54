"""Energy meters over Modbus TCP and RTU: register maps as data, a polling backend, a server.

``maps`` reads and checks a model's register map (``meters/*.yaml``, package data) and plans its
reads; ``codec`` turns registers into quantities and back (construct); ``values`` judges
quantities and makes a ``MeterReading``; ``url`` parses and checks meter URLs; ``line`` is one
bus (its pymodbus client, its requests, its polling task); ``meter`` is the ``modbus-tcp://`` /
``modbus-rtu://`` backend (``open_meter``); ``server`` serves simulated meters through
pymodbus's own server and ``simfeed`` feeds it from the simulator; ``ptypair`` is a virtual
serial cable for RTU tests and the bench. Only ``line``, ``meter``, ``server`` and ``simfeed``
import pymodbus. See docs/meters.md.
"""
