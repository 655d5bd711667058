/* shim: generated at xnu build time; no symbol aliasing needed for struct layouts */
