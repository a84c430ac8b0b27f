"""The views: the %%nanobanana magic, the ipywidgets Panel and the nanobanana command. Thin: they
parse, call Session and show what the display layer renders.
"""
