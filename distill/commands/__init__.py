"""One module per CLI command; each parses flags, calls one library function, prints."""
