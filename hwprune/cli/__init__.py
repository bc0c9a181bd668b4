"""The ``hwprune`` command line: a thin shell that parses arguments and calls library verbs."""
