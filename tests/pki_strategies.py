"""Hypothesis strategies for the names a CSR or a grant carries, shared by the PKI properties.

Labels start with a letter so no DNS name reads as an IP address.
"""

from __future__ import annotations

from string import ascii_lowercase as LOWER
from string import digits as DIGITS

from hypothesis import strategies as st

from certctl.pki.names import IPAddress, SubjectAltNames

labels = st.builds(
    "{}{}{}".format,
    st.sampled_from(LOWER),
    st.text(LOWER + DIGITS + "-", max_size=6),
    st.sampled_from(LOWER + DIGITS),
)
hosts = st.lists(labels, min_size=2, max_size=3).map(".".join)
dns_names = hosts | hosts.map("*.{}".format) | hosts.map(str.upper)
ips: st.SearchStrategy[IPAddress] = st.ip_addresses(v=4) | st.ip_addresses(v=6)
local_parts = st.text(LOWER + DIGITS + "+_-", min_size=1, max_size=8)
emails = st.builds("{}@{}".format, local_parts, hosts)
uris = st.builds("spiffe://{}/{}".format, hosts, labels) | st.builds("https://{}/".format, hosts)
name_sets = st.builds(
    SubjectAltNames,
    dns=st.lists(dns_names, max_size=3).map(tuple),
    ips=st.lists(ips, max_size=2).map(tuple),
    emails=st.lists(emails, max_size=2).map(tuple),
    uris=st.lists(uris, max_size=2).map(tuple),
)
