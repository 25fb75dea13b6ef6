"""The built-in middleboxes: ``nat`` (endpoint-independent IPv4 NAT over a shared port pool) and
``monitor`` (pass-through per-flow, per-protocol and top-talker accounting).

``packets`` holds the frame parsing and checksum helpers they share.
"""
