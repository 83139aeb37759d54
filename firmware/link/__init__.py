"""The station <-> coordinator link: messages, the station's side, the coordinator, transports."""
