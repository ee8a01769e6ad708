# The operator's image: `buildfarm operator` in the controller Deployment and `buildfarm
# assemble` in each build's index Job, for linux/amd64 and linux/arm64 (`npm run image`).
#
# The build stage runs on the build machine's own platform: what it makes (dist/ and
# node_modules, which holds no native code: test/e2e/image.test.ts checks the lock) is the same
# JavaScript for every target, so only the runtime stage is per platform and nothing runs under
# emulation. No `# syntax=` line: BuildKit's built-in Dockerfile frontend builds this, and an
# offline buildkitd does not have to pull one. Both bases can be swapped for mirrors without
# editing this file, as BuildKit named contexts (README: The operator image).

FROM --platform=$BUILDPLATFORM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The `node` devDependency only pins Node 24 for development machines; the base has it.
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npx tsc -p tsconfig.build.json \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf src

FROM gcr.io/distroless/nodejs24-debian12:nonroot
ARG BUILDFARM_VERSION=dev
ARG BUILDFARM_REVISION=unknown
LABEL org.opencontainers.image.title="buildfarm" \
      org.opencontainers.image.description="Kubernetes operator for rootless BuildKit builder farms" \
      org.opencontainers.image.source="https://github.com/buildfarm-dev/buildfarm" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${BUILDFARM_VERSION}" \
      org.opencontainers.image.revision="${BUILDFARM_REVISION}"
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# What `buildfarm --version` prints besides package.json's version.
ENV NODE_ENV=production BUILDFARM_REVISION=${BUILDFARM_REVISION}
USER 65532:65532
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["operator"]
