"""Units of work: each a Ray Data UDF with declared input and output columns."""
