"""One module per dataset family; each protocol returns a ProtocolResult."""
