"""The demo on the sample scene and `qmtgan real` on real pairs: the whole pipeline, end to
end, with its report."""
