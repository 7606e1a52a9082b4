"""Incoming mail: fetch, parse and classify, file on records, respond.

One module per stage's domain (fetch, classify, filing, respond), plus the
parsing and automatic-mail rules they share.
"""
