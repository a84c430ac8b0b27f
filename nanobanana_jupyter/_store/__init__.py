"""The store layer: the SQLite history (records, state machine, leases, queries), the image store
and History. Imports the wire layer and Pillow.
"""
