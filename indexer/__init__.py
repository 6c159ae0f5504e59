"""The indexing application: discover files, decode them in worker processes, embed, write."""
