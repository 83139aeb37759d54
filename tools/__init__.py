"""ampshare command line and bench tools."""
