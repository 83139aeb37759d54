"""The Raspberry Pi GPIO backend: a station controller board wired to a Pi's own pins, with
the pilot PWM on the kernel's hardware PWM (sysfs), relays and inputs on GPIO lines, and the
pilot ADC on SPI. One job per module; this package file imports nothing."""
