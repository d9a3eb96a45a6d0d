# The model image: the inference runtime plus one model bundle at
# /opt/ctr/bundle. `ctr image bake MODEL VERSION` builds it with buildah; it
# passes RUNTIME_IMAGE (pinned by digest), the labels, and a build context
# that contains only bundle/, with files 0644, folders 0755 and fixed times, so
# the same model version gives the same bundle layer digest on every bake.
# RUNTIME_IMAGE=scratch gives an image with the bundle alone, which workers
# read with MODEL_SOURCE=oci.
ARG RUNTIME_IMAGE=scratch
FROM ${RUNTIME_IMAGE}

# The bundle must stay the last and only layer this file adds: the bake
# checks that and marks that layer with the annotation ai.ctr.layer=bundle.
COPY --chown=0:0 bundle/ /opt/ctr/bundle/
ENV MODEL_SOURCE=baked \
    BUNDLE_PATH=/opt/ctr/bundle
ENTRYPOINT ["/opt/ctr/venv/bin/ctr-worker"]
