"""Reference implementations the tests hold the product to: plain, row-by-row restatements of rules
the product computes in bulk (tables, SQL). Test code only; the product never imports them."""
