"""Examples built on netdef (not part of its API): the embedded demo and LeNet on scikit-learn's digits."""
