"""Keys, CSRs, certificates, chains and CRLs on top of ``cryptography``.

Every parse of outside input goes through this package so that garbage becomes a typed
``PKIError`` with a clear message instead of whatever ``cryptography`` happens to raise.
"""
