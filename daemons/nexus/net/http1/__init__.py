"""HTTP/1.1 on httptools: pure parser core, Trio server and pooled client."""
