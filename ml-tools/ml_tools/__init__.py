"""Developer and operator tools at the top of the house: `make run`'s launcher and the admin CLI."""
