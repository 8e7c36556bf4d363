"""Multi-process tests of the scale-out (issue 19): several `creditd serve` processes on
one PostgreSQL database, sharing the customers through shard leases."""
