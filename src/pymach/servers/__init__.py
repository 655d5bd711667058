"""Servers that run as processes of their own: the bootstrap server
(``pymach bootstrap serve``) and the rendezvous through which clients
reach it."""
