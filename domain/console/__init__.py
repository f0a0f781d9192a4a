"""The console's own rules: operator sessions, CSRF tokens, consumer portal links and the pages' queries."""
