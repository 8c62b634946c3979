"""Board pin and clock constraint files, installed as package data (see ``README.md``)."""
