"""DNS, bytes in and bytes out: reading the wire, answering queries, RFC 2136
updates, the response cache and TSIG. Pure: the clock is passed in."""
