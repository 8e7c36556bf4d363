"""Scale-out: the node (leases, routing, once-only jobs, notices) and its internal channel."""
