"""The statistics app: a request middleware, a worker command and the stats pages."""
