//! HTTP/1.1 on httparse: heads, body framing, chunked coding, streaming.
