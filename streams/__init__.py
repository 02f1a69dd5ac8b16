"""xlrec streams: event contracts, Kafka SDK, Faust worker, CLI and lag monitor."""
