// node load_three.mjs MESH.glb: what three.js's GLTFLoader makes of the file. Node has no image decoder,
// so the texture's PNG is handed over undecoded (its byte count is printed) and the size is a stand-in.
globalThis.self = globalThis;
globalThis.createImageBitmap = async (blob) => ({ width: 0, height: 0, bytes: blob.size, close() {} });
const fs = await import('fs');
const { REVISION } = await import('three');
const { GLTFLoader } = await import('three/examples/jsm/loaders/GLTFLoader.js');

const buf = fs.readFileSync(process.argv[2]);
const data = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
new GLTFLoader().parse(data, '', (gltf) => {
  const meshes = [];
  gltf.scene.traverse((o) => {
    if (o.isMesh) {
      meshes.push({
        vertices: o.geometry.attributes.position.count, triangles: o.geometry.index.count / 3,
        uv: Boolean(o.geometry.attributes.uv), material: o.material.type,
        texture_png_bytes: o.material.map ? o.material.map.image.bytes : null,
      });
    }
  });
  console.log(JSON.stringify({ three: REVISION, meshes }));
  process.exit(meshes.length > 0 && meshes.every((m) => m.uv && m.texture_png_bytes) ? 0 : 1);
}, (error) => { console.error(error.message); process.exit(1); });
