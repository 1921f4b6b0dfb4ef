"""The server side: teachers, AMS sessions (selection, rates, training), Just-In-Time."""
