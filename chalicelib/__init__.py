"""Lookout Edge for AWS: the code the Lambdas run (edge, forwarder, key sync)."""
