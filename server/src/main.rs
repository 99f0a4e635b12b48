fn main() {
    println!("strom: not yet");
}
