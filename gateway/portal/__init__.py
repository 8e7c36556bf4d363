"""What a person's browser sees: the customer portal, the embeddable widgets, the operator
console (docs/portal.md), and what a customer token may read."""
