"""The core layer: the engine thread, submitting, polling, collecting, webhook reconciliation,
change events, references, Session and Task. Imports the wire and store layers.
"""
