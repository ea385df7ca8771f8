"""Speed and memory benchmarks (``make bench``): each module measures one group of rows."""
