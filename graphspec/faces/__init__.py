"""graphspec's face application: face folders and LFW, verification on pair protocols, embedding photos, the
shipped face models and their recipes.

It is built on the framework (``graphspec``) and the framework never imports it: the command line registers its
commands (:mod:`graphspec.faces.commands`) and the model catalog finds its models through the
``graphspec.models`` entry point.
"""
