"""Walk through the cloud: ``zspace explore`` writes RUN/explore/, an offline page of every point.

``config`` holds every default (light: the command line reads it); ``columns`` gathers
what the page shows of each point (layouts, colours, labels, neighbours, face-map
probes); ``bundle`` writes it as scripts and thumbnail atlases that open from disk;
``page`` draws the WebGL map with Bokeh and writes index.html (``explore``).
"""
