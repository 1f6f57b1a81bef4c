"""A faithful in-process XAPI simulator: world model, XML-RPC endpoints per host, pool builder."""
