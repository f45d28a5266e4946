import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";
import tailwindcss from "@tailwindcss/vite";

// Served under /ui/ (index also at /): assets get absolute /ui/assets/NAME-HASH.ext paths.
// build.rs sets WICK_WEB_OUT_DIR to a temporary folder it moves into web/dist/<hash>.
export default defineConfig({
  base: "/ui/",
  plugins: [preact(), tailwindcss()],
  build: {
    outDir: process.env.WICK_WEB_OUT_DIR || "dist/dev",
    emptyOutDir: true,
    // No inline scripts or data: modules: the page's CSP allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  test: {
    include: ["tests/unit/**/*.test.ts"],
    environment: "node",
  },
});
