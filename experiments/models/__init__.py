"""Models: the recipes a config declares (recipes), the keras.applications backbones (backbones), a
study's own builder functions (builders), and building Keras models from them (build)."""
