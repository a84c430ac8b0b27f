"""The wire layer: API records, errors, settings, retry maths, the sans-IO protocol and the two
HTTP clients. Imports only the standard library and httpx.
"""
