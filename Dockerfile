# syntax=docker/dockerfile:1
# The operator's image: `buildfarm operator` in the controller Deployment and
# `buildfarm assemble` in each build's index Job.

FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The `node` devDependency only pins Node 24 for development machines; the image has it.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json \
 && npm ci --omit=dev --ignore-scripts \
 && rm -rf src

FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
USER 65532:65532
ENV NODE_ENV=production
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["operator"]
