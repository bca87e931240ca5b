"""One module per dataset family (movielens, retail), the end-to-end runs of their splits over
HTTP (e2e), and the validation search (tuning); each protocol returns a ProtocolResult."""
